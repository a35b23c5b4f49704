//! The program's own metrics, served at `GET /internal/metrics` in Prometheus text
//! format: ingest rates, errors by kind, consumer-group lag, queue depths and flush
//! times. One [`Telemetry`] is created at start-up and shared (`Arc`) by the server and
//! the workers.
//!
//! # Layout
//! - this file: [`Telemetry`] with every metric family, and its text encoding.

use std::sync::Arc;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Declares a label-value enum with its exposition names (one place each).
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value as exposed.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// The ingest APIs (`api` label).
    Api {
        /// `data_nexus.MetricsService`.
        GrpcDataNexus => "grpc_data_nexus",
        /// `raftmetrics.v1.MetricsService`.
        GrpcRaftmetrics => "grpc_raftmetrics",
        /// `nimbus.NimbusService.ProcessEvent`.
        GrpcNimbus => "grpc_nimbus",
        /// `datanexus.v1.EventStream.Stream`.
        GrpcEventStream => "grpc_event_stream",
        /// `POST /metrics`.
        HttpMetrics => "http_metrics",
        /// `POST /ingest`.
        HttpIngest => "http_ingest",
        /// `POST /write` and `POST /api/v2/write` (InfluxDB line protocol).
        HttpWrite => "http_write",
        /// `POST /api/v1/write` (Prometheus remote write).
        HttpRemoteWrite => "http_remote_write",
    }
}

impl Api {
    /// Whether this is a gRPC API.
    pub fn is_grpc(self) -> bool {
        matches!(
            self,
            Api::GrpcDataNexus | Api::GrpcRaftmetrics | Api::GrpcNimbus | Api::GrpcEventStream
        )
    }
}

label_enum! {
    /// Where an error happened (`component` label).
    Component {
        /// The ingest APIs.
        Ingest => "ingest",
        /// Queries (`/metrics/{name}`, `/data`, `/datasets`).
        Query => "query",
        /// The exposition (`GET /metrics`, `/internal/metrics`) and drain scrapes.
        Exposition => "exposition",
        /// Any other HTTP route.
        Http => "http",
        /// The client event streams.
        Streams => "streams",
        /// The metrics and events sinkers.
        Sinker => "sinker",
        /// The result forwarder.
        Forwarder => "forwarder",
        /// The processors.
        Processor => "processor",
        /// The acknowledging stage of a worker.
        Acker => "acker",
        /// Retention (store and broker).
        Retention => "retention",
    }
}

label_enum! {
    /// What went wrong (`kind` label).
    ErrorKind {
        /// A bad request.
        InvalidInput => "invalid_input",
        /// No or a wrong token.
        Unauthenticated => "unauthenticated",
        /// A valid token without the scope the request needs.
        Forbidden => "forbidden",
        /// No such resource.
        NotFound => "not_found",
        /// A conflicting request.
        Conflict => "conflict",
        /// A body over the limit.
        PayloadTooLarge => "payload_too_large",
        /// A body in a format the endpoint does not take.
        UnsupportedMediaType => "unsupported_media_type",
        /// The in-flight budget or the concurrency limit was exhausted.
        Overloaded => "overloaded",
        /// A backend was unavailable.
        Unavailable => "unavailable",
        /// A deadline passed.
        Timeout => "timeout",
        /// A fault of the program.
        Internal => "internal",
        /// A broker call failed (workers).
        Broker => "broker",
        /// A store write failed (workers).
        Store => "store",
        /// A store flush failed (workers).
        Flush => "flush",
        /// A record that cannot be handled went to the dead-letter topic.
        Poison => "poison",
        /// Results older or beyond the replay bounds were not replayed.
        ReplayDropped => "replay_dropped",
        /// A stream could not be claimed in the mailbox.
        Claim => "claim",
        /// A stream was closed because its client read too slowly.
        SlowClient => "slow_client",
        /// The stream cursors could not be persisted.
        Persist => "persist",
    }
}

label_enum! {
    /// A bounded in-process queue (`queue` label).
    Queue {
        /// Ingest records accepted but not yet durable (the backpressure budget).
        InflightRecords => "inflight_records",
        /// Bytes of ingest request bodies and messages held in memory (the byte
        /// budget).
        InflightBytes => "inflight_bytes",
    }
}

/// Labels of ingest counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// The API.
    pub api: Api,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Where.
    pub component: Component,
    /// What.
    pub kind: ErrorKind,
}

/// Labels of per-group metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
}

/// Labels of per-partition metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: String,
    /// Partition number.
    pub partition: String,
}

/// Labels of queue gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Which queue.
    pub queue: Queue,
}

/// Every metric of the program.
pub struct Telemetry {
    registry: Registry,
    /// Records (metrics, events) acknowledged to clients, by API.
    pub ingested_records: Family<IngestLabels, Counter>,
    /// Ingest requests answered, by API.
    pub ingest_requests: Family<IngestLabels, Counter>,
    /// Errors by component and kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Records produced but not yet committed by a consumer group.
    pub consumer_lag: Family<GroupLabels, Gauge>,
    /// Records a worker consumed (first deliveries and redeliveries).
    pub consumed_records: Family<GroupLabels, Counter>,
    /// Records delivered again (lease expiry, crash, nack).
    pub redelivered_records: Family<GroupLabels, Counter>,
    /// Items waiting in bounded in-process queues (in-flight ingest records, head rows).
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Duration of store flushes, seconds.
    pub flush_duration_seconds: Histogram,
    /// Rows written by store flushes.
    pub flushed_rows: Counter,
    /// Offsets lost to corruption that the embedded log found when it opened (never
    /// reused; the log continues after them).
    pub log_lost_offsets: Family<PartitionLabels, Counter>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// A registry with every family registered under the `datanexus` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("datanexus");
        let t = Telemetry {
            ingested_records: Family::default(),
            ingest_requests: Family::default(),
            errors: Family::default(),
            consumer_lag: Family::default(),
            consumed_records: Family::default(),
            redelivered_records: Family::default(),
            queue_depth: Family::default(),
            flush_duration_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            flushed_rows: Counter::default(),
            log_lost_offsets: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "log_recovery_lost_offsets",
            "Offsets lost to corruption found when the embedded log opened (never reused)",
            t.log_lost_offsets.clone(),
        );
        registry.register(
            "ingested_records",
            "Records acknowledged to clients, by API",
            t.ingested_records.clone(),
        );
        registry.register(
            "ingest_requests",
            "Ingest requests answered, by API",
            t.ingest_requests.clone(),
        );
        registry.register("errors", "Errors by component and kind", t.errors.clone());
        registry.register(
            "consumer_lag_records",
            "Records produced but not yet committed by a consumer group",
            t.consumer_lag.clone(),
        );
        registry.register(
            "consumed_records",
            "Records consumed by workers",
            t.consumed_records.clone(),
        );
        registry.register(
            "redelivered_records",
            "Records delivered again after a lease expiry, crash or nack",
            t.redelivered_records.clone(),
        );
        registry.register(
            "queue_depth",
            "Items waiting in bounded in-process queues",
            t.queue_depth.clone(),
        );
        registry.register(
            "store_flush_duration_seconds",
            "Duration of store flushes",
            t.flush_duration_seconds.clone(),
        );
        registry.register(
            "store_flushed_rows",
            "Rows written by store flushes",
            t.flushed_rows.clone(),
        );
        Arc::new(Telemetry { registry, ..t })
    }

    /// Records offsets of `topic`/`partition` lost to corruption at recovery.
    pub fn log_lost_offsets(&self, topic: &str, partition: u32, lost: u64) {
        self.log_lost_offsets
            .get_or_create(&PartitionLabels {
                topic: topic.to_owned(),
                partition: partition.to_string(),
            })
            .inc_by(lost);
    }

    /// Counts an error.
    pub fn error(&self, component: Component, kind: ErrorKind) {
        self.error_n(component, kind, 1);
    }

    /// Counts `n` errors.
    pub fn error_n(&self, component: Component, kind: ErrorKind, n: u64) {
        self.errors
            .get_or_create(&ErrorLabels { component, kind })
            .inc_by(n);
    }

    /// How many errors were counted.
    pub fn errors_counted(&self, component: Component, kind: ErrorKind) -> u64 {
        self.errors
            .get_or_create(&ErrorLabels { component, kind })
            .get()
    }

    /// The Prometheus text exposition (format 0.0.4 compatible, ends with `# EOF`
    /// removed so that `promtool check metrics` accepts it as 0.0.4 text).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        match out.strip_suffix("# EOF\n") {
            Some(body) => body.to_owned(),
            None => out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_families_with_help_and_type() {
        let t = Telemetry::new();
        t.ingested_records
            .get_or_create(&IngestLabels {
                api: Api::GrpcDataNexus,
            })
            .inc_by(3);
        t.error(Component::Ingest, ErrorKind::InvalidInput);
        let text = t.encode();
        assert!(
            text.contains("# TYPE datanexus_ingested_records counter"),
            "{text}"
        );
        assert!(
            text.contains("datanexus_ingested_records_total{api=\"grpc_data_nexus\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("datanexus_errors_total{component=\"ingest\",kind=\"invalid_input\"} 1"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}
