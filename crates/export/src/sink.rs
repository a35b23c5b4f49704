//! Where a job's rows go: a file (see `files.rs`) or a Kafka topic, and how a row
//! becomes a Kafka record.
//!
//! A record's value is a `datanexus.v1.PointRecord` (protobuf; measurement = the
//! dataset, labels = the tag columns, fields = the other columns, missing values left
//! out) or the row's JSON object (as in NDJSON files); its key is the row's tag values
//! ([`Row::key`]); its timestamp is the row's time in milliseconds.

use datanexus_proto::datanexus::v1 as pb;
use prost::Message;

use crate::files::{self, FileFormat};
use crate::source::{Role, Row, Schema, Value};
use crate::{Error, Result};

/// Where a job's rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file under the export directory, downloadable once the job succeeded.
    File(FileFormat),
    /// A Kafka topic.
    Kafka(KafkaTarget),
}

impl Target {
    /// The format's API name (`parquet`, `csv`, `ndjson`, `protobuf`, `json`).
    pub fn format_name(&self) -> &'static str {
        match self {
            Target::File(format) => format.extension(),
            Target::Kafka(kafka) => kafka.format.name(),
        }
    }
}

/// A Kafka topic to export to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTarget {
    /// Comma-separated `host:port` bootstrap brokers.
    pub brokers: String,
    /// The topic; it must exist (its partitions spread the chunks).
    pub topic: String,
    /// How rows are encoded.
    pub format: MessageFormat,
}

impl KafkaTarget {
    /// Parses `kafka://host:port[,host:port…]/topic`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming what is missing.
    pub fn parse_url(url: &str, format: MessageFormat) -> Result<Self> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| Error::Invalid(format!("{url:?} is not a kafka://brokers/topic URL")))?;
        let (brokers, topic) = rest.split_once('/').ok_or_else(|| {
            Error::Invalid(format!("{url:?} names no topic (kafka://host:port/topic)"))
        })?;
        Self::new(brokers, topic, format)
    }

    /// A target after checking that both names are there.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty broker list or topic.
    pub fn new(brokers: &str, topic: &str, format: MessageFormat) -> Result<Self> {
        let brokers = brokers.trim();
        if brokers.is_empty() || brokers.split(',').any(|b| b.trim().is_empty()) {
            return Err(Error::Invalid(
                "kafka_brokers is required: host:port[,host:port…]".to_owned(),
            ));
        }
        if topic.is_empty() || topic.contains('/') {
            return Err(Error::Invalid(format!(
                "send_topic {topic:?} is not a topic name"
            )));
        }
        Ok(KafkaTarget {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            format,
        })
    }
}

/// How rows are encoded as Kafka records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    /// `datanexus.v1.PointRecord`.
    Protobuf,
    /// The row's JSON object.
    Json,
}

impl MessageFormat {
    /// Parses `protobuf` (also `proto`) or `json`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the known formats.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "protobuf" | "proto" => Ok(MessageFormat::Protobuf),
            "json" => Ok(MessageFormat::Json),
            other => Err(Error::Invalid(format!(
                "unknown message format {other:?}: expected \"protobuf\" or \"json\""
            ))),
        }
    }

    /// The API name.
    pub fn name(self) -> &'static str {
        match self {
            MessageFormat::Protobuf => "protobuf",
            MessageFormat::Json => "json",
        }
    }

    /// The record value of `row`.
    pub fn encode(self, schema: &Schema, row: &Row) -> Vec<u8> {
        match self {
            MessageFormat::Protobuf => point_record(schema, row).encode_to_vec(),
            MessageFormat::Json => {
                // One allocation for most rows: the time and ~24 bytes per column.
                let mut line = String::with_capacity(48 + 24 * schema.columns.len());
                files::json_line(&mut line, schema, row);
                line.pop();
                line.into_bytes()
            }
        }
    }
}

/// `row` as a `PointRecord`: tags as labels (sorted by name), the other non-null
/// values as fields.
pub(crate) fn point_record(schema: &Schema, row: &Row) -> pb::PointRecord {
    let mut labels = Vec::new();
    let mut fields = Vec::new();
    for (column, value) in schema.columns.iter().zip(&row.values) {
        if column.role == Role::Tag {
            let text = match value {
                Value::Null => continue,
                Value::Text(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            labels.push(pb::Label {
                name: column.name.clone(),
                value: text,
            });
            continue;
        }
        let value = match value {
            Value::Null => continue,
            Value::Bool(b) => pb::field::Value::Bool(*b),
            Value::Int(i) => pb::field::Value::I64(*i),
            Value::Float(f) => pb::field::Value::F64(*f),
            Value::Text(s) => pb::field::Value::Str(s.clone()),
        };
        fields.push(pb::Field {
            name: column.name.clone(),
            value: Some(value),
        });
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    pb::PointRecord {
        measurement: schema.dataset.clone(),
        labels,
        fields,
        timestamp_ns: row.time_ns,
        kind: pb::MetricKind::Untyped as i32,
        help: None,
    }
}

/// The Kafka producer of a job (feature `kafka`).
#[cfg(feature = "kafka")]
pub(crate) use kafka::KafkaSink;

/// Without the feature `kafka` there is no Kafka sink: opening one says so.
#[cfg(not(feature = "kafka"))]
pub(crate) enum KafkaSink {}

#[cfg(not(feature = "kafka"))]
impl KafkaSink {
    pub(crate) async fn open(_: &KafkaTarget, _: std::time::Duration) -> Result<Self> {
        Err(Error::Invalid(
            "this datanexus was built without Kafka support (cargo feature `kafka`)".to_owned(),
        ))
    }

    pub(crate) fn partitions(&self) -> u32 {
        match *self {}
    }

    pub(crate) async fn send(
        &self,
        _: u32,
        _: &Schema,
        _: &[Row],
    ) -> Result<Option<(u64, u64, u64)>> {
        match *self {}
    }
}

#[cfg(feature = "kafka")]
mod kafka {
    use std::time::Duration;

    use datanexus_broker::kafka::{KafkaBroker, KafkaOptions};
    use datanexus_broker::{Broker, ErrorKind, Position, ProduceRecord};

    use super::{KafkaTarget, MessageFormat};
    use crate::source::{Row, Schema};
    use crate::{Error, Result};

    /// Produces a job's rows to its topic: idempotent, `acks=all`, lz4 (the broker
    /// crate's producer).
    pub(crate) struct KafkaSink {
        broker: KafkaBroker,
        topic: String,
        brokers: String,
        format: MessageFormat,
        partitions: u32,
    }

    impl KafkaSink {
        /// Connects and looks the topic up (it must exist).
        pub(crate) async fn open(target: &KafkaTarget, timeout: Duration) -> Result<Self> {
            let options = KafkaOptions {
                bootstrap_servers: target.brokers.clone(),
                client_id: "datanexus-export".to_owned(),
                request_timeout: timeout,
                ..KafkaOptions::default()
            };
            let broker = KafkaBroker::open(options)
                .map_err(|e| Error::Invalid(format!("kafka {}: {e}", target.brokers)))?;
            let mut sink = KafkaSink {
                broker,
                topic: target.topic.clone(),
                brokers: target.brokers.clone(),
                format: target.format,
                partitions: 0,
            };
            sink.partitions = sink
                .broker
                .partitions(&target.topic)
                .await
                .map_err(|e| sink.error(&e))?;
            Ok(sink)
        }

        /// The topic's partitions.
        pub(crate) fn partitions(&self) -> u32 {
            self.partitions
        }

        fn error(&self, e: &datanexus_broker::Error) -> Error {
            let at = format!("kafka {}, topic {:?}", self.brokers, self.topic);
            match e.kind() {
                ErrorKind::NotFound => Error::NotFound(format!(
                    "{at}: the topic does not exist (create it first: its partitions \
                     spread the export's chunks)"
                )),
                ErrorKind::InvalidInput => Error::Invalid(format!("{at}: {e}")),
                _ => Error::Unreachable(format!("{at}: {e}")),
            }
        }

        /// Produces `rows` to `partition`, in order; returns the offsets of the first
        /// and last record and the bytes of the values, once every record is durable.
        pub(crate) async fn send(
            &self,
            partition: u32,
            schema: &Schema,
            rows: &[Row],
        ) -> Result<Option<(u64, u64, u64)>> {
            if rows.is_empty() {
                return Ok(None);
            }
            let mut bytes = 0u64;
            let records: Vec<ProduceRecord> = rows
                .iter()
                .map(|row| {
                    let value = self.format.encode(schema, row);
                    bytes += value.len() as u64;
                    ProduceRecord {
                        partition: Some(partition),
                        key: Some(row.key(schema).into_bytes().into()),
                        value: value.into(),
                        timestamp_ms: row.time_ns.div_euclid(1_000_000),
                    }
                })
                .collect();
            let ids = self
                .broker
                .produce(&self.topic, records)
                .await
                .map_err(|e| self.error(&e))?;
            let offsets: Vec<u64> = ids
                .iter()
                .filter_map(|id| match id.position {
                    Position::Offset(o) => Some(o),
                    Position::StreamId { .. } => None,
                })
                .collect();
            Ok(offsets
                .iter()
                .min()
                .zip(offsets.iter().max())
                .map(|(lo, hi)| (*lo, *hi, bytes)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Column, ColumnKind};

    fn schema() -> Schema {
        let column = |name: &str, kind, role| Column {
            name: name.to_owned(),
            kind,
            role,
        };
        Schema {
            dataset: "cpu".to_owned(),
            time_column: "time".to_owned(),
            columns: vec![
                column("region", ColumnKind::Text, Role::Tag),
                column("host", ColumnKind::Text, Role::Tag),
                column("usage", ColumnKind::Float, Role::Field),
                column("count", ColumnKind::Int, Role::Field),
                column("note", ColumnKind::Text, Role::Field),
            ],
        }
    }

    #[test]
    fn rows_become_point_records_with_sorted_labels_and_no_nulls() {
        let row = Row {
            time_ns: 1_500_000_123,
            values: vec![
                Value::Text("eu".to_owned()),
                Value::Text("h1".to_owned()),
                Value::Float(0.5),
                Value::Null,
                Value::Text("ok".to_owned()),
            ],
        };
        let bytes = MessageFormat::Protobuf.encode(&schema(), &row);
        let record = pb::PointRecord::decode(&bytes[..]).unwrap();
        assert_eq!(record.measurement, "cpu");
        assert_eq!(record.timestamp_ns, 1_500_000_123);
        let labels: Vec<(&str, &str)> = record
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(labels, [("host", "h1"), ("region", "eu")]);
        assert_eq!(record.fields.len(), 2);
        assert_eq!(record.fields[0].value, Some(pb::field::Value::F64(0.5)));
        assert_eq!(
            record.fields[1].value,
            Some(pb::field::Value::Str("ok".to_owned()))
        );
        assert_eq!(row.key(&schema()), "eu,h1");

        let json: serde_json::Value =
            serde_json::from_slice(&MessageFormat::Json.encode(&schema(), &row)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"time": "1970-01-01T00:00:01.500000123Z", "region": "eu",
                               "host": "h1", "usage": 0.5, "count": null, "note": "ok"})
        );
    }

    #[test]
    fn kafka_urls_and_formats_parse() {
        let t = KafkaTarget::parse_url("kafka://a:9092,b:9092/cpu", MessageFormat::Json).unwrap();
        assert_eq!(
            (t.brokers.as_str(), t.topic.as_str()),
            ("a:9092,b:9092", "cpu")
        );
        for bad in [
            "a:9092/cpu",
            "kafka://a:9092",
            "kafka:///cpu",
            "kafka://a:9092/",
            "kafka://a,,b/t",
        ] {
            assert!(
                matches!(
                    KafkaTarget::parse_url(bad, MessageFormat::Json),
                    Err(Error::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            MessageFormat::parse("proto").unwrap(),
            MessageFormat::Protobuf
        );
        assert!(MessageFormat::parse("avro").is_err());
    }
}
