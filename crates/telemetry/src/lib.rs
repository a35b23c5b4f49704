//! The program's own metrics, served at `GET /internal/metrics` in Prometheus text
//! format: ingest rates, errors by kind, consumer-group lag, queue depths and flush
//! times. One [`Telemetry`] is created at start-up and shared (`Arc`) by the server and
//! the workers.
//!
//! # Layout
//! - this file: [`Telemetry`] with every metric family, and its text encoding.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of ingest counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// `grpc_data_nexus`, `grpc_raftmetrics`, `http_metrics`, `http_ingest`, …
    pub api: String,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Where: `ingest`, `sinker`, `exposition`, …
    pub component: String,
    /// What: `invalid_input`, `overloaded`, `unavailable`, `internal`, …
    pub kind: String,
}

/// Labels of per-group metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
}

/// Labels of queue gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Which queue.
    pub queue: String,
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
            registry: Registry::default(),
        };
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

    /// Counts an error.
    pub fn error(&self, component: &str, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                component: component.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
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
                api: "grpc_data_nexus".into(),
            })
            .inc_by(3);
        t.error("ingest", "invalid_input");
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
