//! `data_nexus.MetricsService` (wire-compatible with the Data Nexus seed).
//!
//! - `IngestMetric(Metric) → IngestResponse{eventId}`; `IngestMetrics(BatchMetrics) →
//!   BatchIngestResponse{eventIds}` with one real record id per metric, in order (the
//!   seed returned blanks).
//! - `Metric.type` is parsed case-insensitively (empty = untyped; unknown strings are
//!   rejected); `Metric.timestamp` is Unix seconds, 0 = the time the server received it.
//! - A batch is all or nothing: one invalid metric rejects it with `INVALID_ARGUMENT`
//!   naming the index and the problem (`metrics[3]: invalid metric name "9x": …`), so a
//!   client never has to guess which part was stored.
//! - Replies are sent only once the records are durable in the broker.

use datanexus_model::{Limits, MetricType, Point, time};
use datanexus_proto::data_nexus::metrics_service_server::MetricsService;
use datanexus_proto::data_nexus::{BatchIngestResponse, BatchMetrics, IngestResponse, Metric};
use tonic::{Request, Response, Status};

use crate::convert::{SeedSample, check_batch_len, convert_batch, unix_seconds_or};
use crate::observe::Api;
use crate::{AppState, Error};

/// The `data_nexus.MetricsService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct DataNexusService {
    state: AppState,
}

impl DataNexusService {
    pub(crate) fn new(state: AppState) -> Self {
        DataNexusService { state }
    }

    async fn ingest_one(&self, metric: Metric) -> Result<String, Error> {
        let point = metric_to_point(metric, time::now_ns(), &self.state.options().limits)?;
        let ids = self
            .state
            .ingestor()
            .points(std::slice::from_ref(&point))
            .await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| Error::Internal("broker returned no record id".into()))
    }

    async fn ingest_batch(&self, metrics: Vec<Metric>) -> Result<Vec<String>, Error> {
        let options = self.state.options();
        check_batch_len(metrics.len(), options.max_batch_metrics, "metrics")?;
        let now_ns = time::now_ns();
        let points = convert_batch(metrics, "metrics", now_ns, |m, now_ns| {
            metric_to_point(m, now_ns, &options.limits)
        })?;
        self.state.ingestor().points(&points).await
    }
}

/// Converts one seed metric; `now_ns` replaces a zero timestamp.
pub(crate) fn metric_to_point(
    m: Metric,
    now_ns: i64,
    limits: &Limits,
) -> datanexus_model::Result<Point> {
    let kind = MetricType::parse_lenient(&m.r#type)?;
    let timestamp_ns = unix_seconds_or(m.timestamp, now_ns)?;
    SeedSample {
        name: m.name,
        value: m.value,
        kind,
        labels: m.labels,
        timestamp_ns,
        help: None,
    }
    .into_point(limits)
}

#[tonic::async_trait]
impl MetricsService for DataNexusService {
    async fn ingest_metric(
        &self,
        request: Request<Metric>,
    ) -> Result<Response<IngestResponse>, Status> {
        let outcome = self.ingest_one(request.into_inner()).await;
        let event_id = self
            .state
            .observe_ingest(Api::GrpcDataNexus, outcome, |_| 1)?;
        Ok(Response::new(IngestResponse { event_id }))
    }

    async fn ingest_metrics(
        &self,
        request: Request<BatchMetrics>,
    ) -> Result<Response<BatchIngestResponse>, Status> {
        let outcome = self.ingest_batch(request.into_inner().metrics).await;
        let event_ids = self
            .state
            .observe_ingest(Api::GrpcDataNexus, outcome, Vec::len)?;
        Ok(Response::new(BatchIngestResponse { event_ids }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn metric(name: &str, kind: &str, timestamp: i64) -> Metric {
        let labels = HashMap::from([("host".to_owned(), "a".to_owned())]);
        Metric {
            name: name.into(),
            value: 1.5,
            r#type: kind.into(),
            timestamp,
            labels,
        }
    }

    #[test]
    fn converts_type_timestamp_and_labels() {
        let p = metric_to_point(metric("cpu", "GAUGE", 10), 99, &Limits::default()).unwrap();
        assert_eq!(p.kind, MetricType::Gauge);
        assert_eq!(p.timestamp_ns, 10_000_000_000);
        assert_eq!(p.labels.get("host"), Some("a"));
        let now = metric_to_point(metric("cpu", "", 0), 99, &Limits::default()).unwrap();
        assert_eq!((now.kind, now.timestamp_ns), (MetricType::Untyped, 99));
    }

    #[test]
    fn rejects_unknown_types_and_negative_timestamps() {
        let e = metric_to_point(metric("cpu", "countr", 0), 0, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("\"countr\""), "{e}");
        assert!(metric_to_point(metric("cpu", "", -5), 0, &Limits::default()).is_err());
    }
}
